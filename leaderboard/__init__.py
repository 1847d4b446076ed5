"""The static leaderboard: builder (build.py) and the published result files (results/)."""
