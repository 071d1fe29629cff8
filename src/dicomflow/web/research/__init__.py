"""Research-project pages (RadPlanBio's subjects, uploader and DICOM lookup), thin over the project
services (``dicomflow.projects.services``) and selectors: a page checks nothing and writes nothing
itself, so the browser meets the same roles and audit as the API and the CLI."""
