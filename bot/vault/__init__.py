"""The vault: many depositors on one trading account (README "The vault").

``bot.vault.ledger`` keeps depositors, shares and exits in SQLite; the arithmetic that decides
exit quantities and prices lives in :mod:`bot.core.vault`.
"""
