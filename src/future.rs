//! asyncio.Future: `Promise<T>` (being written)
