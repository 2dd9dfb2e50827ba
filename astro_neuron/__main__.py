import sys

from astro_neuron.cli import main

sys.exit(main())
