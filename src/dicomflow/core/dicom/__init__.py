"""DICOM file handling without Django: header reading (stop before pixels), SOP class names."""
