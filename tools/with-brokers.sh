#!/usr/bin/env bash
# Runs a command with Kafka and RabbitMQ available. Brokers named by STREAMLIB_TEST_KAFKA and
# STREAMLIB_TEST_RABBIT are used as they are; otherwise the launcher starts both and, when it
# was this script that started them, stops them afterwards, also when the command fails.
set -uo pipefail
here=$(cd "$(dirname "$0")" && pwd)
launcher=(python3 "$here/brokers.py")
if [ -z "${STREAMLIB_TEST_KAFKA:-}" ] || [ -z "${STREAMLIB_TEST_RABBIT:-}" ]; then
  if ! "${launcher[@]}" status >/dev/null 2>&1; then
    trap '"${launcher[@]}" down' EXIT
    "${launcher[@]}" up || exit 1
  fi
  eval "$("${launcher[@]}" env)"
fi
"$@"
