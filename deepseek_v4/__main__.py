import sys

from deepseek_v4.demo import main

sys.exit(main())
