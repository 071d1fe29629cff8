"""Export: where data leaves dicomflow — configured DICOM nodes and the C-STORE sender (SCU).

Processing sends to processors and destinations through this app; the receiver (SCP) stays in
intake, since what it does is import.
"""
