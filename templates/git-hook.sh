#!/bin/sh
# shipit-hook: @MODE@
# Push to deploy, written by `shipit hook install`. A push to the deploy
# branch runs `shipit hook @MODE@`, which deploys the pushed revision and
# streams its progress back to the pusher as `remote:` lines.
# In pre-receive mode a failed deploy rejects the push, so the branch here
# never points at a revision that failed to deploy.
# To change the binary, the config or the branch, run
# `shipit hook install --force` again rather than editing this file.
exec @SHIPIT@ --config @CONFIG@ hook @MODE@@BRANCH@
