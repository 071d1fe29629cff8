"""DICOM networking: the C-STORE/C-ECHO receiver (``scp``) and the C-STORE sender (``scu``).

Import the submodules (they need Django only where the catalogue is involved)::

    from dicomflow.intake.network.scp import StorageSCP, run_scp
    from dicomflow.intake.network.scu import echo, send_instances, send_series, send_study
"""
