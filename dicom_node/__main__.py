import sys

from dicom_node.cli.main import main

sys.exit(main())
