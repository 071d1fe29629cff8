"""DICOM networking on the receiving side: the C-STORE/C-ECHO receiver (``scp``, ``fastpath``) and
what the sender shares with it (``common``: AE titles, node addresses, allowlists, no-delay sockets).

The sender (C-STORE SCU, C-ECHO) is export, not intake: :mod:`dicomflow.export.scu`::

    from dicomflow.intake.network.scp import StorageSCP, run_scp
"""
