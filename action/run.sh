#!/usr/bin/env bash
# The compress GitHub Action (action.yml) in one script, runnable anywhere: install compress-edge,
# run a recipe (or take an existing report), then `compress gate` it.
#
# Inputs are environment variables (action.yml maps its inputs onto them):
#   INPUT_RECIPE     recipe to run with `compress run RECIPE -o OUTPUT`          } one of the two
#   INPUT_REPORT     existing report.json to gate instead of running a recipe    }
#   INPUT_OUTPUT     output folder (default reports/ci)
#   INPUT_GATE_ARGS  extra `compress gate` arguments, split at whitespace (no quoting)
#   INPUT_BASELINE   previous report.json, passed as --baseline
#   INPUT_JUNIT      JUnit XML file (default OUTPUT/gates.xml)
#   INPUT_INSTALL    true (default) installs with pip; false uses the compress already installed
#   INPUT_EXTRAS     pip extras, comma-separated (default openvino; empty for none)
#   INPUT_VERSION    version of compress-edge from PyPI (`0.2.0`, `>=0.2,<0.3`); empty installs
#                    the checkout this script belongs to
# and, outside GitHub's inputs:
#   COMPRESS         the command to run (default `compress`; e.g. "python -m compress"), split at spaces
#   PYTHON           the interpreter whose pip installs (default python3)
#
# When $GITHUB_OUTPUT is set, the outputs `report` (the gated report.json), `folder` (the folder
# holding it) and `exit-code` are appended to it. `compress gate` itself appends its Markdown table
# to $GITHUB_STEP_SUMMARY when that is set.
#
# Exit code: compress's (see README, Exit codes): the gate's, 0 when every gate holds and 1 when
# one fails; 2 for bad input (including neither or both of recipe and report); a failed
# `compress run` stops here with its own code; a run that wrote its report but could not measure
# a target (6) keeps that code when the gates pass; 3 when compress cannot be installed or found.
set -uo pipefail

recipe=${INPUT_RECIPE:-}
report=${INPUT_REPORT:-}
output=${INPUT_OUTPUT:-reports/ci}
gate_args=${INPUT_GATE_ARGS:-}
baseline=${INPUT_BASELINE:-}
junit=${INPUT_JUNIT:-}
install=${INPUT_INSTALL:-true}
extras=${INPUT_EXTRAS-openvino}
version=${INPUT_VERSION:-}
python=${PYTHON:-python3}
gated=  # the report.json handed to `compress gate`, once there is one
here=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
read -r -a compress <<<"${COMPRESS:-compress}"

outputs() {
    local code=$?
    if [ -n "${GITHUB_OUTPUT:-}" ]; then
        {
            if [ -n "$gated" ]; then
                echo "report=$gated"
                echo "folder=$(dirname "$gated")"
            fi
            echo "exit-code=$code"
        } >>"$GITHUB_OUTPUT"
    fi
}
trap outputs EXIT

fail() {  # fail CODE MESSAGE: one line on stderr (a GitHub annotation on Actions)
    if [ "${GITHUB_ACTIONS:-}" = true ]; then
        echo "::error title=compress::$2" >&2
    else
        echo "error: $2" >&2
    fi
    exit "$1"
}

if [ -z "$recipe" ] && [ -z "$report" ]; then
    fail 2 "give the action a recipe (to run) or a report (an existing report.json to gate)"
fi
if [ -n "$recipe" ] && [ -n "$report" ]; then
    fail 2 "give the action a recipe or a report, not both"
fi
case "$install" in
    true | false) ;;
    *) fail 2 "install must be true or false, not '$install'" ;;
esac

if [ "$install" = true ]; then
    suffix=${extras:+[$extras]}
    if [ -z "$version" ]; then
        requirement="$here$suffix"
    else
        case "$version" in
            [0-9]*) version="==$version" ;;
        esac
        requirement="compress-edge$suffix$version"
    fi
    echo "installing $requirement"
    "$python" -m pip install --quiet --disable-pip-version-check "$requirement" ||
        fail 3 "pip could not install $requirement"
fi
command -v "${compress[0]}" >/dev/null || fail 3 "${compress[0]} not found: install compress-edge or set install: true"

if [ -n "$recipe" ]; then
    # The gate step below writes the step summary; the run's own gate table would repeat it.
    env -u GITHUB_STEP_SUMMARY "${compress[@]}" run "$recipe" --output "$output"
    run_code=$?
    case $run_code in
        0 | 1 | 6) ;;  # the report was written (1: the recipe's gates failed; the gate step says which)
        # 2: the recipe's gates could not judge (e.g. a disturbed latency); 4: a stage failed and the
        # report holds the rest. The gate step, with this job's own arguments, still reports.
        2 | 4) [ -f "$output/report.json" ] || exit "$run_code" ;;
        *) exit "$run_code" ;;
    esac
    report=$output/report.json
else
    run_code=0
fi

set -f  # gate arguments such as `--variant name[ratio=0.3]` are not file patterns
# shellcheck disable=SC2206
args=($gate_args)
set +f
gated=$report
if [ -n "$baseline" ]; then
    args+=(--baseline "$baseline")
fi
"${compress[@]}" gate "$report" ${args[@]+"${args[@]}"} --junit "${junit:-$output/gates.xml}"
gate_code=$?
if [ "$gate_code" = 0 ] && { [ "$run_code" = 4 ] || [ "$run_code" = 6 ]; }; then
    exit "$run_code"  # the gates held, but a stage or a measurement failed
fi
exit "$gate_code"
