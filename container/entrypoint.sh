#!/bin/sh
# The image's entrypoint: fakemdev's own arguments go to fakemdev
# (`IMAGE mount --foreground /shared/sys`, `IMAGE --help`); anything else is a
# command to run (`IMAGE sh -c '...'`, a CI runner's shell), so the image also
# serves as the base of a test job.
set -e
case "${1:-}" in
    ""|-*|mount|umount|status|driver|fault|run|shell|play|record|scenarios|migrate|sriov-manage)
        exec fakemdev "$@" ;;
    *)
        exec "$@" ;;
esac
