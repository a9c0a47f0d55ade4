"""Ranking students without training them: the candidate space (``candidates``) and the DisWOT score (``diswot``)."""
