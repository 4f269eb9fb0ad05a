#!/usr/bin/env bash
# Check 6 of the GPU truth kit (GPU.md): `sda probe` on cuda:0, judged (probe_check.py), its answer
# run again in a fresh process and the true maximum searched for comparison (gpu_probe_truth for the
# built-in workload, model.py truth for the model file).
#   bash probe.sh builtin|model          (run.sh sets KIT, RESULTS and PY)
set -u
C=$KIT/checks
# strict: a GPU that fails its smoke test is an error, not a silent probe of the CPU.
strict=$RESULTS/probe-strict.toml
printf '[hardware]\nstrict = true\n' >"$strict"
case "${1:-}" in
  builtin)
    budget=$((4 << 30))
    json=$RESULTS/probe-builtin.json
    echo "== sda probe --device cuda:0 --budget 4GiB --json"
    "$KIT/bin/sda" --config "$strict" probe --device cuda:0 --budget 4GiB --json >"$json" 2>"$json.stderr"
    echo "exit $?"; cat "$json.stderr" "$json"; echo
    judged=$("$PY" "$C/probe_check.py" 6.probe "$json" "$budget" 2>&1)
    echo "$judged"
    answer=$(awk '$1 == "ANSWER" {print $2, $3}' <<<"$judged")
    set -- $answer
    echo "== gpu_probe_truth $budget ${1:-0} ${2:-0}"
    "$KIT/bin/gpu_probe_truth" "$budget" "${1:-0}" "${2:-0}"
    ;;
  model)
    budget=$((2 << 30))
    model=$RESULTS/model.pt
    json=$RESULTS/probe-model.json
    echo "== model.py make"
    "$PY" "$C/model.py" make "$model" || echo "the model could not be written"
    echo "== sda probe --device cuda:0 --model model.pt --input 1,48000 --budget 2GiB --json"
    "$KIT/bin/sda" --config "$strict" probe --device cuda:0 --model "$model" --input 1,48000 --budget 2GiB --json >"$json" 2>"$json.stderr"
    echo "exit $?"; cat "$json.stderr" "$json"; echo
    judged=$("$PY" "$C/probe_check.py" 6.model.probe "$json" "$budget" 2>&1)
    echo "$judged"
    answer=$(awk '$1 == "ANSWER" {print $2, $3}' <<<"$judged")
    set -- $answer
    echo "== model.py truth $budget ${1:-0} ${2:-0}"
    "$PY" "$C/model.py" truth "$model" "$budget" "${1:-0}" "${2:-0}"
    ;;
  *)
    echo "usage: probe.sh builtin|model" >&2
    exit 2
    ;;
esac
