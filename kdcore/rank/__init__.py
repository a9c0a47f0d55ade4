"""Ranking students without training them: the candidate space (``candidates``), the registry of training-free
proxies and the ranking (``proxies``), the DisWOT terms (``diswot``)."""
