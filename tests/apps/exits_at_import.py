"""An app module that calls sys.exit() while being imported, as a misconfigured app might."""
import sys

sys.exit("refusing to be imported")
