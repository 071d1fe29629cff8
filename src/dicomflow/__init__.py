"""dicomflow: moves clinical DICOM (radiotherapy above all) into research and processing, safely."""

__version__ = "0.1.0"
