"""Real applications, installed from ../shared/apps by their own installers, as test beds."""
