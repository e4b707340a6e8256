#!/bin/sh
cd "$(dirname "$0")/.." || exit 2
exec node dist/tools/kernel-audit/kernel-audit.js "$@" bpf/ambient.bpf.o
