"""The predictive cache warmer (controller ``cache-warmer``): learns when each cacheable request is asked from the
gateway's request record (hours of the week with exponential decay, plus recent frequency) and from the
``cache.warmer.calendar``, predicts the next window's requests, and queues warms for those whose cache entry is
missing or expires inside the window, when the model is loaded (or planned and fits) and the hourly token budget
allows; a gateway carries them out when idle. docs/PREDICTIVE_CACHE_WARMING.md."""
