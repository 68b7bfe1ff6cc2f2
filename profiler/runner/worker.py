"""Run one study in this process (under Scalene or plain) and write its JSON.

Invoked by `profiler.runner.process.run_study` as a script:
`worker.py RUN_DIR STUDY[,STUDY...] [--under-scalene]`. Several studies share one process (and
one Scalene profile) only in quick builds.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
os.environ.setdefault("TQDM_DISABLE", "1")


def main(argv: list[str]) -> int:
    """Load the run's settings and model, run each study named, write `<study>.partial.json`."""
    import time

    import psutil

    from profiler.config import Settings
    from profiler.rundir import CONFIG, TEXTS, RunDir
    from profiler.runner.probes import start_early
    from profiler.runner.scalene_output import trim_scalene_output

    run_dir, names = Path(argv[0]), argv[1].split(",")
    if "--under-scalene" in argv:
        trim_scalene_output()  # its profile keeps the lines with samples: a shorter exit
    run = RunDir(run_dir)
    plan = run.read(CONFIG)
    settings = Settings.from_dict(plan["settings"])
    # the memory study's fresh probes import the model stack beside this process's own imports
    probes = start_early(names, settings.batch_sizes, settings.quick)

    from profiler.corpus import load_corpus
    from profiler.model import ModelSource, load_model
    from profiler.studies import STUDIES
    from profiler.studies.base import Profiling, StudyContext, emit

    began = time.time()
    _quiet_libraries()
    emit("study", study=names[0], title=STUDIES[names[0]].TITLE)
    emit("loading", label="loading model")
    model, info = load_model(ModelSource(**plan["model_source"]), plan["device"],
                             settings.trust_remote_code)
    texts = run.read_texts() if run.has(TEXTS) else load_corpus(
        Path(plan["corpus_path"]), settings.corpus_max_mb, settings.text_max_chars)
    ctx = StudyContext(model=model, info=info, texts=texts,
                       settings=settings, profiling=Profiling("--under-scalene" in argv),
                       run_dir=run_dir, probes=probes)
    for probe in probes.values():  # no import may share the cores with a timed pass
        probe.wait_ready()
    seconds = {"startup": began - psutil.Process().create_time(), "load": time.time() - began}
    for index, name in enumerate(names):
        if index:
            emit("study", study=name, title=STUDIES[name].TITLE)
        started = time.time()
        result = STUDIES[name]().run(ctx)
        run.write_study(name, {"study": name, "model": info.to_dict(), "result": result.to_dict(),
                               "process_s": {**seconds, "study": time.time() - started},
                               "process_shared_with": [n for n in names if n != name]},
                        partial=True)
    return 0


def _quiet_libraries() -> None:
    import transformers

    transformers.logging.set_verbosity_error()


if __name__ == "__main__":
    # Run as a script, this file's folder heads sys.path and its modules (process…) would
    # shadow libraries' own; the folder holding the `profiler` package belongs there instead.
    here = Path(__file__).resolve().parent
    sys.path = [p for p in sys.path if Path(p or ".").resolve() != here]
    sys.path.insert(0, str(here.parent.parent))
    from profiler.runner.lifetime import watch_build

    watch_build()  # before the slow imports: if the build dies, this process group ends too
    sys.exit(main(sys.argv[1:]))
