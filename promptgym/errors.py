"""Named exceptions of promptgym.

Every error a user can trigger by configuration or input has its own class, so that callers can
catch precisely what they expect and so that each message can say what to do next.
"""

from __future__ import annotations


class PromptGymError(Exception):
    """Base class of every error raised on purpose by promptgym."""


class UnknownTaskError(PromptGymError, KeyError):
    """A task name that is not in the catalog."""

    def __str__(self) -> str:  # KeyError would otherwise quote the message
        return str(self.args[0]) if self.args else ""


class DataNotFoundError(PromptGymError, FileNotFoundError):
    """The configured data directory or one of its files does not exist."""


class DataIntegrityError(PromptGymError, ValueError):
    """A data file exists but does not match the mirror's manifest (row count or format)."""


class UnknownSeedError(PromptGymError, ValueError):
    """A k-shot split seed outside the published ones (13, 21, 42, 87, 100)."""


class SplitUnavailableError(PromptGymError, LookupError):
    """The task has no such split (QQP has no test set, only SST-2/MRPC/RTE have a pool)."""


class HubUnavailableError(PromptGymError, ConnectionError):
    """No local data directory was configured and the Hugging Face hub could not be reached."""


class UnknownModelError(PromptGymError, KeyError):
    """A model name that is neither a preset nor loadable as a Hugging Face id."""

    def __str__(self) -> str:
        return str(self.args[0]) if self.args else ""


class InvalidPromptError(PromptGymError, ValueError):
    """A prompt the LM cannot score: wrong shape, NaN/inf values, token ids outside the vocabulary."""


class InvalidRequestError(PromptGymError, ValueError):
    """A malformed scoring request, e.g. an empty batch."""


class RequestTooLargeError(InvalidRequestError):
    """A request over a server's size limits (HTTP 413): nothing was charged; send it in parts."""


class InvalidActionError(PromptGymError, ValueError):
    """An action outside the environment's action space; the budget is not charged."""


class BudgetExhausted(PromptGymError, RuntimeError):
    """The query budget is spent; no further LM call is allowed."""


class InvalidSubmissionError(PromptGymError, ValueError):
    """A leaderboard submission that breaks the schema or the protocol (budget, seeds, sizes).

    Submissions arrive as files from strangers, so nothing in them is trusted: the message always
    names the offending field path (e.g. ``runs[2].test.ece``) so the submitter knows what to fix.
    """


class ConfigError(PromptGymError, ValueError):
    """A configuration value that cannot work: an agent config field, an env argument, a CLI flag.

    Raised when the config is built, before the model loads and before any call is charged, with a
    message that names the field, what it got and what it accepts.
    """


class UnknownEnvError(ConfigError, KeyError):
    """An env id that is not registered."""

    def __str__(self) -> str:
        return str(self.args[0]) if self.args else ""


class UnknownAgentError(ConfigError, KeyError):
    """An agent name that is not in the agent registry."""

    def __str__(self) -> str:
        return str(self.args[0]) if self.args else ""


class PluginError(ConfigError):
    """An installed plugin (a package's ``promptgym.agents`` / ``promptgym.tasks`` entry point) that cannot be
    used: it fails to import, is not the shape promptgym expects, or clashes with another name."""


class IncompatibleAgentError(ConfigError):
    """An agent that cannot run on the env it was given (wrong env kind, reward or backend)."""


class ResumeError(ConfigError):
    """A run cannot be resumed from its folder: no journal, a journal of another run, a finished run,
    or a resumed agent that asks for other prompts than the killed run did (it would not be the same run)."""


class InvalidProbabilitiesError(PromptGymError, ValueError):
    """Predictive probabilities a metric cannot read: a wrong shape, non-finite values, rows that do
    not sum to 1, or labels outside the classes."""


class AuthenticationError(ConfigError):
    """An LM server refused the API key (HTTP 401): unknown, revoked or missing."""


class ServiceError(PromptGymError, ConnectionError):
    """An LM server could not be reached, kept answering "busy" after every retry, or failed (5xx)."""


class KeyStoreBusyError(PromptGymError, RuntimeError):
    """The key store stayed locked by another process past its busy timeout (HTTP 503 on a server):
    nothing was charged, and the same request can simply be retried."""
