"""gridbot's backtester, optimizer and simulated exchange."""

# bot's package init points numba's cache at a folder per version of the compiled sources; it
# must run before numba is imported, and backtest modules import numba before bot.
import bot  # noqa: F401
