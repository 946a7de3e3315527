// node:path for the browser bundle: the engine names models with basename(); nothing else is used there.
export const basename = (p: string, ext?: string): string => {
  const b = p.replace(/[/\\]+$/, '').replace(/^.*[/\\]/, '');
  return ext && b.endsWith(ext) ? b.slice(0, -ext.length) : b;
};
export default { basename };
