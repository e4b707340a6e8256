#!/bin/sh
cd "$(dirname "$0")/.." || exit 2
exec node dist/src/datapath/kernel-audit.js "$@" bpf/ambient.bpf.o
