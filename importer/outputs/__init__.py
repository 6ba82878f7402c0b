"""What a run leaves behind: report, dead letters, metrics, notify, progress."""
