#!/usr/bin/env bash
# Runs a command with Kafka, RabbitMQ and PostgreSQL available. Servers named by
# STREAMLIB_TEST_KAFKA, STREAMLIB_TEST_RABBIT and STREAMLIB_TEST_POSTGRES are used as they are;
# otherwise the launcher starts them and, when it was this script that started them, stops them
# afterwards, also when the command fails.
set -uo pipefail
here=$(cd "$(dirname "$0")" && pwd)
launcher=(python3 "$here/brokers.py")
if [ -z "${STREAMLIB_TEST_KAFKA:-}" ] || [ -z "${STREAMLIB_TEST_RABBIT:-}" ] \
  || [ -z "${STREAMLIB_TEST_POSTGRES:-}" ]; then
  if ! "${launcher[@]}" status >/dev/null 2>&1; then
    trap '"${launcher[@]}" down' EXIT
    "${launcher[@]}" up || exit 1
  fi
  eval "$("${launcher[@]}" env)"
fi
"$@"
