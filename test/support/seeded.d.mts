export declare function mulberry32(seed: number): () => number;
export declare const normal: (rnd: () => number) => number;
