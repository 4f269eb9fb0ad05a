#!/bin/sh
# expect_output.sh PATTERN PROGRAM [ARGS...]: runs PROGRAM and passes only when it exits 0 AND its
# standard output contains PATTERN (a fixed string). CTest's PASS_REGULAR_EXPRESSION alone would
# ignore the exit status, so a program that printed the line and then crashed would pass.
pattern=$1
shift
out=$("$@")
status=$?
printf '%s\n' "$out"
if [ "$status" -ne 0 ]; then
  echo "expect_output: $1 exited with status $status" >&2
  exit 1
fi
case $out in
  *"$pattern"*) exit 0 ;;
  *) echo "expect_output: the output of $1 lacks \"$pattern\"" >&2; exit 1 ;;
esac
