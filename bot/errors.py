"""The exception tree the whole bot relies on.

    GridbotError                 anything gridbot reports to the user (exit code 2 from the CLI)
    ├── ConfigError              a bad config file or CLI value: names the key, the value, what is allowed
    ├── DataError                bad, gappy or missing candle data: names the file, the row, the problem
    └── ExchangeError            the venue said no, or could not be reached
        ├── TransientExchangeError   timeouts, dropped connections, 5xx: retry with backoff
        │   └── RateLimitError       429 / 418: back off for longer
        ├── OrderRejectedError       an order the venue refused (an ordinary outcome, not a crash)
        │   ├── InsufficientMarginError
        │   └── DuplicateOrderError  our client id already rests (a create that landed): re-sync
        ├── UnknownOrderError        cancel/query of an order the venue does not know: re-sync
        ├── PositionModeError        the account is not in the position mode we trade (hedge)
        └── AuthenticationError      bad keys or signature: stop

ccxt's exceptions are translated into these once, in ``bot.exchange``.
"""

from __future__ import annotations


class GridbotError(Exception):
    """Base of every error gridbot reports to the user."""


class ConfigError(GridbotError):
    """A config value is wrong: the message names the key, the value and what is allowed."""


class DataError(GridbotError):
    """Candle data is wrong or missing: the message names the file, the row and the problem."""


class ExchangeError(GridbotError):
    """The exchange refused a request or could not be reached."""


class TransientExchangeError(ExchangeError):
    """A timeout, dropped connection or server error: worth retrying with backoff."""


class RateLimitError(TransientExchangeError):
    """HTTP 429 or 418: the venue asks us to slow down."""


class OrderRejectedError(ExchangeError):
    """The venue refused an order."""


class InsufficientMarginError(OrderRejectedError):
    """The venue refused an order for lack of margin (Binance -2019)."""


class DuplicateOrderError(OrderRejectedError):
    """The client order id is already in use (Binance -4116, Bybit 110072): the create landed."""


class UnknownOrderError(ExchangeError):
    """The venue does not know the order (Binance -2011 / -2013): re-sync open orders."""


class AuthenticationError(ExchangeError):
    """Bad API key or signature: stop, retrying cannot help."""


class PositionModeError(ExchangeError):
    """An order was refused because the account's position mode is not hedge mode (Binance
    -4061, Bybit "position idx not match position mode"), or hedge mode could not be set."""
