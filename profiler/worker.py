"""Run one study in this process (under Scalene or plain) and write its JSON.

Invoked by `profiler.scalene.run_study` as a script: `worker.py RUN_DIR STUDY [--under-scalene]`.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
os.environ.setdefault("TQDM_DISABLE", "1")


def main(argv: list[str]) -> int:
    """Load the run's settings and model, run the study, write `<study>.partial.json`."""
    from profiler.config import Settings
    from profiler.corpus import load_corpus
    from profiler.model import ModelSource, load_model
    from profiler.storage import read_json, write_json
    from profiler.studies import STUDIES
    from profiler.studies.base import Profiling, StudyContext, emit

    run_dir, name = Path(argv[0]), argv[1]
    plan = read_json(run_dir / "config.json")
    settings = Settings.from_dict(plan["settings"])
    _quiet_libraries()
    emit("loading", label="loading model")
    model, info = load_model(ModelSource(**plan["model_source"]), plan["device"])
    ctx = StudyContext(model=model, info=info, texts=load_corpus(Path(plan["corpus_path"])),
                       settings=settings, profiling=Profiling("--under-scalene" in argv),
                       run_dir=run_dir)
    result = STUDIES[name]().run(ctx)
    write_json(run_dir / f"{name}.partial.json",
               {"study": name, "model": info.to_dict(), "result": result})
    return 0


def _quiet_libraries() -> None:
    import transformers

    transformers.logging.set_verbosity_error()


if __name__ == "__main__":
    # Run as a script, this file's folder heads sys.path and its modules (config, model…)
    # would shadow libraries' own; the package's parent belongs there instead.
    here = Path(__file__).resolve().parent
    sys.path = [p for p in sys.path if Path(p or ".").resolve() != here]
    sys.path.insert(0, str(here.parent))
    sys.exit(main(sys.argv[1:]))
