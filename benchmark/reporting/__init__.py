"""What a run reports: results tables, the leaderboard, the sanity battery, figures,
pictures and the web page. Internal to bench."""
