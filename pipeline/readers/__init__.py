"""Dataset readers. Each yields ``pipeline.frames.Frame`` objects; adding a dataset is one module and one entry."""

from hipnet.pipeline.readers.anny import AnnyReader

READERS = {"anny": AnnyReader}
