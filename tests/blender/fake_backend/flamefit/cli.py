"""Fake `flamefit` CLI. FAKE_FLAMEFIT_MODE selects the behaviour:
ok | noface | crash | segv | hang | hang-ignore-term | schema-new | missing-albedo | garbage | profile |
profile-old
(several photos, the second without its points (no --landmarks, or '-'): refused as the real backend
refuses a profile; profile-old: as it did before it said why);
`batch` knows ok | noface | noface-first.
FAKE_FLAMEFIT_PIDFILE: where `hang*` modes write the pids of themselves and their child.
FAKE_FLAMEFIT_CALLS: a file that gets one line (the arguments) per process started."""

import argparse
import json
import os
import shutil
import signal
import subprocess
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.dirname(os.path.dirname(HERE)))  # tests/blender: synth_bundle

STAGES = ["image", "landmarks", "rigid", "shape", "photometric", "texture", "bundle"]


def emit(**event):
    print(json.dumps(event), flush=True)


def main(argv=None):
    parser = argparse.ArgumentParser(prog="flamefit")
    parser.add_argument("--version", action="version", version="flamefit 0.0.0-fake")
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("fit")
    p.add_argument("photos", nargs="+")  # several: one schema-3 bundle with a view each
    p.add_argument("-o", dest="out", required=True)
    p.add_argument("--json-progress", action="store_true")
    p.add_argument("--overwrite", action="store_true")
    p.add_argument("--no-expression", action="store_true")
    for flag in ("--model", "--texture-space", "--uv-template", "--landmark-embedding", "--detector",
                 "--device", "--stages", "--texture-size", "--face"):
        p.add_argument(flag)
    p.add_argument("--landmarks", action="append")  # once per photo, '-': detect (as the real one)
    b = sub.add_parser("batch")
    b.add_argument("photos")
    b.add_argument("-o", dest="out", required=True)
    for flag in ("--json-progress", "--overwrite", "--no-expression", "--resume"):
        b.add_argument(flag, action="store_true")
    for flag in ("--model", "--texture-space", "--uv-template", "--landmark-embedding", "--detector",
                 "--device", "--stages", "--texture-size", "--workers"):
        b.add_argument(flag)
    args = parser.parse_args(argv)
    if args.command == "fit":
        args.photo = args.photos[0]
    mode = os.environ.get("FAKE_FLAMEFIT_MODE", "ok")
    calls = os.environ.get("FAKE_FLAMEFIT_CALLS")
    if calls:  # one line per backend process
        with open(calls, "a") as fh:
            fh.write(json.dumps(sys.argv[1:]) + "\n")
    if args.command == "batch":
        return batch(args, mode)
    record = os.environ.get("FAKE_FLAMEFIT_ARGV")
    if record:
        with open(record, "w") as fh:
            json.dump(sys.argv, fh)

    def on_term(signum, frame):
        raise KeyboardInterrupt

    if mode != "hang-ignore-term":
        signal.signal(signal.SIGTERM, on_term)
    else:
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
    try:
        print("this line is not JSON and must be ignored", flush=True)
        emit(event="stage", stage="image", index=1, count=len(STAGES))
        if not os.path.isfile(args.photo):
            raise SystemExit(f"flamefit: error: photo not found: {args.photo}")
        given = args.landmarks or ["-"] * len(args.photos)
        if len(given) != len(args.photos) or any(m != "-" and not os.path.isfile(m) for m in given):
            msg = f"{len(given)} --landmarks file(s) for {len(args.photos)} photos, or one not found"
            print(f"flamefit: error: {msg}", file=sys.stderr)
            return 2
        if mode in ("profile", "profile-old") and len(args.photos) > 1 and given[1] == "-":  # as the real one
            msg = f"{os.path.basename(args.photos[1])}: " + (
                "not a human face: the face mesh finds no face in the RetinaFace box (143x239 px, score 0.56)"
                if mode == "profile-old" else
                "no landmark source finds this face's points (RetinaFace's five points put it at 98 degrees of "
                "yaw, at or past profile; box 143x239 px, score 0.56): give them with --landmarks FILE (several "
                "photos: one per photo, in order, - for those the detector finds)")
            emit(event="error", message=msg)
            print(f"flamefit: error: {msg}", file=sys.stderr)
            return 2
        if mode == "noface":
            msg = f"no face found in {os.path.basename(args.photo)}: the detector saw no face; try another photo"
            emit(event="error", message=msg)
            print(f"flamefit: error: {msg}", file=sys.stderr)
            return 2
        emit(event="stage", stage="landmarks", index=2, count=len(STAGES), future_key=1)
        emit(event="unknown-event", foo="bar")
        if mode == "crash":
            print("Traceback (most recent call last):\n  File \"x.py\", line 1", file=sys.stderr)
            print("RuntimeError: fake backend crashed", file=sys.stderr, flush=True)
            os._exit(1)
        if mode == "segv":
            os.kill(os.getpid(), signal.SIGKILL)
        if mode.startswith("hang"):
            child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(600)"])
            pidfile = os.environ.get("FAKE_FLAMEFIT_PIDFILE")
            if pidfile:
                with open(pidfile, "w") as fh:
                    json.dump({"backend": os.getpid(), "child": child.pid}, fh)
            emit(event="stage", stage="photometric", index=5, count=len(STAGES))
            for step in range(1000000):
                emit(event="progress", stage="photometric", step=step, total=1000000, loss=1.0 / (step + 1))
                time.sleep(0.05)
        for i, stage in enumerate(STAGES[2:], start=3):
            emit(event="stage", stage=stage, index=i, count=len(STAGES))
            for step in (10, 20):
                emit(event="progress", stage=stage, step=step, total=20, loss=0.1 / step)
        import synth_bundle  # noqa: PLC0415

        out = os.path.abspath(args.out)
        if os.path.exists(out):
            if not args.overwrite:
                print(f"flamefit: error: {out} exists (use --overwrite)", file=sys.stderr)
                return 2
            shutil.rmtree(out)
        tmp = out + ".partial"
        if len(args.photos) > 1:
            import synth_views  # noqa: PLC0415

            for photo in args.photos:
                if not os.path.isfile(photo):
                    raise SystemExit(f"flamefit: error: photo not found: {photo}")
            views = [dict(synth_views.DEFAULT_VIEWS[k % 3], name=os.path.splitext(os.path.basename(p))[0])
                     for k, p in enumerate(args.photos)]
            synth_views.write_views_bundle(tmp, views=views, user_photos=[os.path.abspath(p) for p in args.photos])
        else:
            synth_bundle.write_bundle(tmp, photo_path=os.path.abspath(args.photo),
                                      schema_version=synth_bundle.FLAT_VERSION if mode != "schema-new"
                                      else synth_bundle.SCHEMA_VERSION + 1)
        if mode == "missing-albedo":
            os.remove(os.path.join(tmp, "albedo.png"))
        if mode == "garbage":
            with open(os.path.join(tmp, "mesh.npz"), "wb") as fh:
                fh.write(b"not a zip")
        os.rename(tmp, out)
        emit(event="done", bundle=out, result=os.path.join(out, "result.json"))
        return 0
    except KeyboardInterrupt:
        print("flamefit: interrupted; nothing was written", file=sys.stderr)
        return 130


def batch(args, mode):
    """Like `flamefit batch --json-progress`: one "photo" event per photo, then "done"."""
    import synth_bundle  # noqa: PLC0415

    record = os.environ.get("FAKE_FLAMEFIT_ARGV")
    if record:
        with open(record, "w") as fh:
            json.dump(sys.argv, fh)
    suffixes = synth_bundle.SCHEMA["photo_suffixes"]
    photos = sorted(f for f in os.listdir(args.photos) if os.path.splitext(f)[1].lower() in suffixes)
    out = os.path.abspath(args.out)
    os.makedirs(out, exist_ok=True)
    counts = {"ok": 0, "failed": 0, "skipped": 0}
    for i, name in enumerate(photos, start=1):
        photo = os.path.abspath(os.path.join(args.photos, name))
        bundle = os.path.join(out, os.path.splitext(name)[0])
        message = ""
        if mode == "noface" or (mode == "noface-first" and i == 1):
            message = f"no face found in {name}: the detector saw no face; try another photo"
        else:
            if os.path.exists(bundle):
                shutil.rmtree(bundle)
            synth_bundle.write_bundle(bundle, photo_path=photo)
        status = "failed" if message else "ok"
        counts[status] += 1
        emit(event="photo", photo=photo, bundle=bundle, status=status, index=i, count=len(photos), message=message)
    emit(event="done", summary=os.path.join(out, "summary.csv"), **counts)
    if counts["failed"]:
        print(f"flamefit: error: {counts['failed']} of {len(photos)} photos failed", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
