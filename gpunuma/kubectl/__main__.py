"""``python -m gpunuma.kubectl [__complete WORDS…]``: the plugin, or its shell completion, without
the console scripts (krew's shims call it this way)."""

import sys

from gpunuma.kubectl import completion
from gpunuma.kubectl.command import main

if sys.argv[1:2] == ["__complete"]:
    sys.exit(completion.main(sys.argv[2:]))
sys.exit(main())
