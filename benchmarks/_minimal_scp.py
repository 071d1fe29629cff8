#!/usr/bin/env python3
"""The floor of a pynetdicom receiver: a bare storage SCP that only renames each streamed data set.

    python benchmarks/_minimal_scp.py PORT OUT_DIR [AET]

Used by import_bench as a reference for ``dicomflow scp``: the gap between the two is what dicomflow
adds (header read, hash, store layout, catalog); the gap between this and DCMTK's storescp is
pynetdicom's own cost. Data sets are streamed to a temp folder inside OUT_DIR (same file system,
so the rename is cheap) exactly as dicomflow's receiver does. Stops on SIGTERM.
"""

import os
import signal
import sys
import tempfile
import threading

from pynetdicom import AE, AllStoragePresentationContexts, _config, evt
from pynetdicom.sop_class import Verification


def main() -> int:
    port, out = int(sys.argv[1]), sys.argv[2]
    aet = sys.argv[3] if len(sys.argv) > 3 else "BENCH"
    os.makedirs(out, exist_ok=True)
    tempfile.tempdir = tempfile.mkdtemp(prefix=".incoming-", dir=out)
    _config.STORE_RECV_CHUNKED_DATASET = True
    count = 0
    lock = threading.Lock()

    def on_store(event) -> int:
        nonlocal count
        with lock:
            count += 1
            name = f"{count:08d}.dcm"
        os.replace(event.dataset_path, os.path.join(out, name))
        return 0x0000

    ae = AE(ae_title=aet)
    ae.maximum_pdu_size = 256 * 1024  # as dicomflow's receiver announces
    for cx in AllStoragePresentationContexts:
        ae.add_supported_context(cx.abstract_syntax, ["1.2.840.10008.1.2.1", "1.2.840.10008.1.2"])
    ae.add_supported_context(Verification)
    server = ae.start_server(("127.0.0.1", port), block=False, evt_handlers=[(evt.EVT_C_STORE, on_store)])
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    signal.signal(signal.SIGINT, lambda *_: stop.set())
    stop.wait()
    server.shutdown()
    os.rmdir(tempfile.tempdir) if not os.listdir(tempfile.tempdir) else None
    return 0


if __name__ == "__main__":
    sys.exit(main())
