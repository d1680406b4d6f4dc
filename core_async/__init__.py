"""Components written once, async (aiofiles, httpx HTTP/2, asyncio subprocesses), and the async kernel."""
