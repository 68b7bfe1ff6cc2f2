"""One model instance of a parallel-instances configuration: `python -m profiler.runner.instance`.

Reads a JSON line on stdin ({"model_path", "device", "threads", "trust_remote_code"}), loads the
model with torch limited to `threads`, and writes one ready frame. Then, until stdin closes, it
reads frames of (texts, batch_size) and answers each with the embeddings of `model.encode`.
A frame is a 4-byte big-endian length and a pickle; both ends are this package's own processes.
"""

from __future__ import annotations

import os

os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
os.environ.setdefault("TQDM_DISABLE", "1")

import json
import pickle
import struct
import sys
from typing import IO, Any

HEADER = struct.Struct(">I")


def frame(value: Any) -> bytes:
    """One value as the bytes of a frame."""
    data = pickle.dumps(value, protocol=pickle.HIGHEST_PROTOCOL)
    return HEADER.pack(len(data)) + data


def write_frame(stream: IO[bytes], value: Any) -> None:
    """Send one value."""
    stream.write(frame(value))
    stream.flush()


def read_frame(stream: IO[bytes]) -> Any:
    """Receive one value, or raise EOFError when the other end has closed."""
    header = stream.read(HEADER.size)
    if len(header) < HEADER.size:
        raise EOFError("the other end closed")
    size = HEADER.unpack(header)[0]
    data = stream.read(size)
    if len(data) < size:
        raise EOFError("the other end closed mid-frame")
    return pickle.loads(data)


def serve(request: dict[str, Any], source: IO[bytes], sink: IO[bytes]) -> None:
    """Load the model, say so, then encode each batch of texts sent until the input ends."""
    import torch
    from sentence_transformers import SentenceTransformer

    torch.set_num_threads(int(request["threads"]))
    model = SentenceTransformer(request["model_path"], device=request["device"],
                                trust_remote_code=request.get("trust_remote_code", False))
    write_frame(sink, {"ready": True, "threads": torch.get_num_threads()})
    while True:
        try:
            texts, batch_size = read_frame(source)
        except EOFError:
            return
        write_frame(sink, model.encode(texts, batch_size=batch_size, show_progress_bar=False,
                                       convert_to_numpy=True))


def main() -> None:
    from profiler.runner.lifetime import die_with_parent

    die_with_parent()
    request = json.loads(sys.stdin.buffer.readline())
    serve(request, sys.stdin.buffer, sys.stdout.buffer)


if __name__ == "__main__":
    main()
