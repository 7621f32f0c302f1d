# Sourced by the training scripts, which run `blur-retrieval train` under /usr/bin/time -v and
# append its output to one file per run.
#
# peak_rss_kb FILE prints the last peak resident set size (kB) that /usr/bin/time -v wrote into
# FILE, the one of the latest invocation when a resumed run appended several, or '?' if none.
peak_rss_kb() {
  awk '/Maximum resident set size/ {kb = $NF} END {print (kb == "" ? "?" : kb)}' "$1"
}
