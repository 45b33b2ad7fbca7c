/** SDK name/version sent in every batch header (kept equal to package.json by a test). */
export const SDK = 'js/0.1.0';
