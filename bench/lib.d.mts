// Types of the bench/lib.mjs helpers that TypeScript benches use (services/collector/bench/cluster.ts).
export function table(rows: Record<string, unknown>[]): void;
export function writeResult(name: string, data: Record<string, unknown>): void;
export function fmt(n: number, d?: number): string;
export function processCpuSeconds(pid: number, ticksPerSecond?: number): number;
export function watchdog(name: string, seconds: number): () => void;
