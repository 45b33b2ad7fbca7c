/**
 * Commerce helpers named after GA4's e-commerce events. Each funnel step is a counter;
 * a purchase also adds its value to `commerce.revenue` and observes it in
 * `commerce.order_value`, both tagged with its currency (ISO 4217): amounts in different
 * currencies are different series and are never added together.
 */
import type { Library } from '../library.js';
import type { DropInfo, DropReason, Tags } from '../options.js';

export interface CommerceEvent {
  /** Extra tags for the step (e.g. `{ category: 'shoes' }`). */
  tags?: Tags;
}

export interface PurchaseEvent extends CommerceEvent {
  /** The order's total, in `currency` (finite, ≥ 0). */
  value: number;
  /** ISO 4217 code, three uppercase letters (`EUR`, `USD`, `JPY`). */
  currency: string;
}

export interface Commerce {
  /** `commerce.view_item` +1 */
  viewItem(e?: CommerceEvent): void;
  /** `commerce.add_to_cart` +1 */
  addToCart(e?: CommerceEvent): void;
  /** `commerce.begin_checkout` +1 */
  beginCheckout(e?: CommerceEvent): void;
  /** `commerce.purchase` +1, `commerce.revenue` +value and `commerce.order_value` ← value,
   * each tagged `{ currency }`. A value or currency that is not valid records nothing and is
   * reported through onDrop (`invalid_value`, `invalid_tags`). */
  purchase(e: PurchaseEvent): void;
}

let codes: string[] | undefined;
/** An ISO 4217 code: three uppercase letters, and one the runtime knows where it can tell
 * (`Intl.supportedValuesOf('currency')`: current browsers and Node). */
export const isCurrency = (c: unknown): c is string => {
  const known = (Intl as { supportedValuesOf?: (k: string) => string[] }).supportedValuesOf;
  return typeof c == 'string' && /^[A-Z]{3}$/.test(c) && (!known || (codes ||= known('currency')).includes(c));
};

export function commerce(lib: Library, onDrop?: (reason: DropReason, info: DropInfo) => void): Commerce {
  const step = (name: string) => (e?: CommerceEvent) => lib.count('commerce.' + name, 1, e?.tags);
  return {
    viewItem: step('view_item'),
    addToCart: step('add_to_cart'),
    beginCheckout: step('begin_checkout'),
    purchase(e) {
      const { value, currency, tags } = e || ({} as PurchaseEvent);
      const bad: DropReason | false = !(Number.isFinite(value) && value >= 0) ? 'invalid_value' : !isCurrency(currency) && 'invalid_tags';
      if (bad) {
        try {
          onDrop?.(bad, { count: 3, name: 'commerce.purchase' });
        } catch {}
        return;
      }
      const t = { ...tags, currency };
      lib.count('commerce.purchase', 1, t);
      lib.count('commerce.revenue', value, t);
      lib.observe('commerce.order_value', value, t);
    },
  };
}
