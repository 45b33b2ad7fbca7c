export { CipherstatMetricExporter, DEFAULT_RESOURCE_ATTRIBUTES } from './exporter.js';
export type { CipherstatExporterOptions, ExporterStats } from './exporter.js';
export type { AttributeDrop } from './tags.js';
