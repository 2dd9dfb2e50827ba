import sys

from astro_neuron.apps.cli import main

sys.exit(main())
