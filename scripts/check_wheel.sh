#!/usr/bin/env bash
# Check the built artifacts as a user without the repository gets them (issue 25): build the sdist and, from it, the
# wheel; `twine check --strict` both; check what the wheel holds (every module, the recipes and accelerate configs,
# nothing from tests/); install the wheel with its `demo` extra into a fresh virtual environment; then, from a folder
# outside the checkout, run `rasft-trl recipes`, `rasft-trl eval --help` and one step of the smoke recipe, and check
# that it saved a model.
#
#   bash scripts/check_wheel.sh                       # or: make test-wheel
#   KEEP_WORK=1 bash scripts/check_wheel.sh           # keep the temporary folder (its path is printed)
#
# Environment: PY, the Python that has `build` and `twine` (default .venv/bin/python, the `dev` extra); PYTHON, the
# interpreter the fresh environment is made from (default python3); TORCH_SPEC (default torch==2.13.0, the CPU
# build). The fresh environment gets whatever else pip resolves today, e.g. the newest transformers.
# The demo model is taken from the user's cache (`$RASFT_TRL_CACHE`, else ~/.cache/rasft-trl: see
# rasft_trl/demo/model.py); only a first run ever downloads and converts it.
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT="$PWD"

PY="${PY:-.venv/bin/python}"
PYTHON="${PYTHON:-python3}"
TORCH_SPEC="${TORCH_SPEC:-torch==2.13.0}"
KEEP_WORK="${KEEP_WORK:-0}"

export PIP_DISABLE_PIP_VERSION_CHECK=1
export HF_HUB_OFFLINE=1
unset PYTHONPATH  # nothing of the checkout may be importable in the fresh environment

WORK="$(mktemp -d "${TMPDIR:-/tmp}/rasft-trl-wheel.XXXXXX")"
cleanup() {
  if [ "$KEEP_WORK" = 1 ]; then echo "check_wheel: kept $WORK"; else rm -rf "$WORK"; fi
}
trap cleanup EXIT

step() { printf 'check_wheel [%3ds]: %s\n' "$SECONDS" "$*"; }
fail() { echo "check_wheel: FAILED: $*" >&2; exit 1; }

# 1. Build. Without --sdist/--wheel, `build` makes the sdist and then the wheel *from the sdist*, so a file the
#    wheel needs but the sdist lacks (README, recipes) fails here.
step "building the sdist and, from it, the wheel"
"$PY" -m build --outdir "$WORK/dist" . > "$WORK/build.log" 2>&1 \
  || { tail -40 "$WORK/build.log"; fail "python -m build"; }
SDIST="$(ls "$WORK"/dist/rasft_trl-*.tar.gz)"
WHEEL="$(ls "$WORK"/dist/rasft_trl-*.whl)"
step "built $(basename "$SDIST") and $(basename "$WHEEL")"
"$PY" -m twine check --strict "$SDIST" "$WHEEL" || fail "twine check --strict"

# 2. Contents: every module and shipped file of the checkout is in the wheel, nothing else at top level, no tests.
step "checking the wheel's and the sdist's contents"
git ls-files --cached --others --exclude-standard rasft_trl > "$WORK/source-files.txt" 2>/dev/null \
  || (find rasft_trl -type f ! -path '*/__pycache__/*' ! -name '*.pyc' > "$WORK/source-files.txt")
"$PY" - "$WHEEL" "$SDIST" "$WORK/source-files.txt" <<'PYEOF' || fail "wheel / sdist contents"
import sys
import tarfile
import zipfile

wheel, sdist, listing = sys.argv[1:4]
names = set(zipfile.ZipFile(wheel).namelist())
errors = []
expected = {line.strip() for line in open(listing) if line.strip()}
expected = {name for name in expected if name.endswith((".py", ".yaml", ".md"))}
missing = sorted(expected - names)
if missing:
    errors.append(f"missing from the wheel: {missing[:20]}{' ...' if len(missing) > 20 else ''}")
top = {name.split("/", 1)[0] for name in names}
stray = sorted(t for t in top if t != "rasft_trl" and not t.endswith(".dist-info"))
if stray:
    errors.append(f"unexpected top-level entries in the wheel: {stray}")
if any("tests/" in name or name.startswith("test_") for name in names):
    errors.append("the wheel contains test files")
for needed in ("rasft_trl/recipes/smoke/tiny/config.yaml", "rasft_trl/recipes/accelerate_configs/cpu.yaml",
               "rasft_trl/recipes/accelerate_configs/zero2.yaml", "rasft_trl/recipes/README.md"):
    if needed not in names:
        errors.append(f"{needed} is not in the wheel")
recipes = [n for n in names if n.startswith("rasft_trl/recipes/") and n.endswith(".yaml")]
members = {m.split("/", 1)[1] for m in tarfile.open(sdist).getnames() if "/" in m}
for needed in ("README.md", "pyproject.toml", "rasft_trl/recipes/smoke/tiny/config.yaml"):
    if needed not in members:
        errors.append(f"{needed} is not in the sdist")
if errors:
    print("\n".join(errors))
    sys.exit(1)
print(f"check_wheel: the wheel holds {len(names)} files ({len(recipes)} recipe / accelerate YAML files), no tests; "
      f"the sdist {len(members)} entries")
PYEOF

# 3. A fresh environment, as a user gets it: the CPU torch, then the wheel with the `demo` extra.
step "creating a fresh environment and installing $TORCH_SPEC"
"$PYTHON" -m venv "$WORK/venv"
VPY="$WORK/venv/bin/python"
"$VPY" -m pip install -q --upgrade pip
"$VPY" -m pip install -q "$TORCH_SPEC" || fail "pip install $TORCH_SPEC"
step "installing $(basename "$WHEEL")[demo]"
"$VPY" -m pip install -q "${WHEEL}[demo]" || fail "pip install the wheel"
"$VPY" -m pip check || fail "pip check"

# 4. Outside the checkout.
mkdir -p "$WORK/user"
cd "$WORK/user"
export PATH="$WORK/venv/bin:$PATH"
location="$("$VPY" -c 'import rasft_trl; print(rasft_trl.__file__)')"
case "$location" in
  "$WORK/venv/"*) ;;
  *) fail "rasft_trl is imported from $location, not from the fresh environment" ;;
esac
"$VPY" -c 'from rasft_trl import RASFTConfig, RASFTTrainer, SRFTTrainer' || fail "import rasft_trl"
rasft-trl env
# An extra for the installed distribution resolves without rasft-trl on PyPI (the form the docs give).
"$VPY" -m pip install -q --dry-run 'rasft-trl[quantization]' || fail "pip install 'rasft-trl[quantization]' --dry-run"

step "rasft-trl recipes"
rasft-trl recipes > recipes.txt || { cat recipes.txt; fail "rasft-trl recipes"; }
grep -q "smoke/tiny/config.yaml" recipes.txt || { cat recipes.txt; fail "rasft-trl recipes does not list smoke/tiny"; }
grep -q "zero2" recipes.txt || { cat recipes.txt; fail "rasft-trl recipes does not list the accelerate configs"; }
step "rasft-trl eval --help"
rasft-trl eval --help > eval-help.txt || { cat eval-help.txt; fail "rasft-trl eval --help"; }
grep -q -- "--benchmarks" eval-help.txt || { cat eval-help.txt; fail "rasft-trl eval --help lacks --benchmarks"; }

step "the smoke recipe, one step (rasft-trl train --accelerate_config cpu --config smoke/tiny/config.yaml)"
rasft-trl train --accelerate_config cpu --config smoke/tiny/config.yaml \
  --max_steps 1 --output_dir "$WORK/user/smoke-out" > train.log 2>&1 || { tail -60 train.log; fail "smoke recipe"; }
grep -q "Model saved to $WORK/user/smoke-out" train.log || { tail -30 train.log; fail "no 'Model saved to' line"; }
for file in config.json model.safetensors tokenizer_config.json; do
  [ -s "$WORK/user/smoke-out/$file" ] || { ls -la "$WORK/user/smoke-out"; fail "smoke-out/$file is missing"; }
done
"$VPY" - "$WORK/user/smoke-out" <<'PYEOF' || fail "the saved model does not load"
import sys

from transformers import AutoModelForCausalLM, AutoTokenizer

model = AutoModelForCausalLM.from_pretrained(sys.argv[1])
AutoTokenizer.from_pretrained(sys.argv[1])
print(f"check_wheel: the saved model loads ({sum(p.numel() for p in model.parameters()) / 1e6:.0f}M parameters)")
PYEOF
tail -3 train.log

step "passed: $(basename "$WHEEL") installs and runs outside the checkout"
