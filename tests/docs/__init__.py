"""The docs test: every command of README.md and docs/ runs (or says what it needs), the
output pasted in them is real, and every path and link in the repository's markdown exists."""
