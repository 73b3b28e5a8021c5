"""The report: its sections, figures, --against and the seeds section."""
