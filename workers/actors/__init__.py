"""Every actor module, imported explicitly (registration happens in one place)."""

from workers.actors import maintenance, uploads  # noqa: F401
from workers.actors import scheduling  # noqa: F401
from workers.actors import exports  # noqa: F401
from workers.actors import jobs  # noqa: F401
