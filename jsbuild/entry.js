// The browser's DICOM header parser for the research uploader: dicom-parser (MIT) from the npm
// registry, exposed as window.dicomParser. Built by `npm run build` into the vendored static file.
import * as dicomParser from "dicom-parser";

window.dicomParser = dicomParser;
