#!/usr/bin/env bash
# Moved to device/unpack.sh (all GPU-machine scripts live in device/); this path forwards for scripts and
# notes that still source it.
source device/unpack.sh
