#!/bin/sh
# Posts `plumb diff BASE HEAD` on a merge request, for any forge (README "Reviewing a change").
#
#   scripts/diff-comment.sh BASE HEAD
#
# Run in a checkout of the fleet repository that has BASE, HEAD and the status branches
# (`git fetch origin '+refs/heads/status/*:refs/remotes/origin/status/*'`), or set
# PLUMB_STATUS_REPO to the status repository's URL. Without COMMENT_URL the comment is printed.
#   COMMENT_URL   where the forge takes a new comment as JSON {"body": "..."}: GitLab
#                 $CI_API_V4_URL/projects/$CI_PROJECT_ID/merge_requests/$CI_MERGE_REQUEST_IID/notes,
#                 GitHub and Forgejo/Gitea .../repos/OWNER/REPO/issues/NUMBER/comments
#   COMMENT_AUTH  the header that authenticates, e.g. "Authorization: Bearer $TOKEN"
# Needs plumb, git, jq and curl. Exit 1 when a host would reject HEAD (or plumb diff failed),
# else 0: hosts changing is what a merge request is for.
set -u
base=${1:?usage: diff-comment.sh BASE HEAD}
head=${2:?usage: diff-comment.sh BASE HEAD}
set -- --dir "${PLUMB_DIFF_DIR:-.}" "$base" "$head"
if [ -n "${PLUMB_STATUS_REPO:-}" ]; then
  set -- "$@" --status-repo "$PLUMB_STATUS_REPO"
fi
out=$(plumb diff "$@")
code=$?
case $code in
  0) title="no host changes" ;;
  2) title="hosts change" ;;
  *) title="a host would reject this commit (or plumb diff failed: see the job log)" ;;
esac
# Forges limit a comment's size: the per-host details are cut, the summary line is kept.
body=$(printf '%s\n' "$out" | head -c 60000)
summary=$(printf '%s\n' "$out" | tail -n 1)
comment=$(printf '#### plumb diff: %s\n\n%s\n\n<details><summary>per host</summary>\n\n```\n%s\n```\n</details>\n' \
  "$title" "$summary" "$body")
if [ -n "${COMMENT_URL:-}" ]; then
  printf '%s' "$comment" | jq -Rs '{body: .}' |
    curl -fsS -X POST -H "Content-Type: application/json" -H "${COMMENT_AUTH:?set COMMENT_AUTH}" \
      --data @- "$COMMENT_URL" >/dev/null || exit 1
else
  printf '%s\n' "$comment"
fi
[ "$code" -eq 0 ] || [ "$code" -eq 2 ]
