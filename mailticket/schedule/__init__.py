"""The fixed periodic jobs of `mailticket serve`, on APScheduler 3.x."""
