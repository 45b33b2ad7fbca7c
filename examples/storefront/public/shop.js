// The demo shop's own logic (catalogue, cart in sessionStorage, currency). The analytics are
// the storefront script tag in each page (autocapture) and the Cipherstat.instance calls below.
const Shop = (() => {
  const PRODUCTS = [
    { id: '101', name: 'Trail runner', category: 'shoes', price: { EUR: 89, USD: 99 } },
    { id: '102', name: 'City sneaker', category: 'shoes', price: { EUR: 65.5, USD: 72 } },
    { id: '201', name: 'Linen shirt', category: 'shirts', price: { EUR: 39.9, USD: 44 } },
    { id: '202', name: 'Oxford shirt', category: 'shirts', price: { EUR: 49, USD: 54.5 } },
  ];
  const $ = (id) => document.getElementById(id);
  const metrics = () => window.Cipherstat && window.Cipherstat.instance; // absent if the script did not load: the shop works on
  const q = new URLSearchParams(location.search);
  if (q.get('currency')) sessionStorage.setItem('currency', q.get('currency'));
  const currency = () => sessionStorage.getItem('currency') || 'EUR';
  const cart = () => JSON.parse(sessionStorage.getItem('cart') || '[]');
  const total = () => Math.round(cart().reduce((s, id) => s + PRODUCTS.find((p) => p.id == id).price[currency()], 0) * 100) / 100;
  const money = (v) => new Intl.NumberFormat('en', { style: 'currency', currency: currency() }).format(v);
  const item = (p) => {
    const li = document.createElement('li');
    const a = Object.assign(document.createElement('a'), { href: '/product/' + p.id, textContent: p.name });
    li.append(a, ' ', money(p.price[currency()]));
    return li;
  };
  addEventListener('DOMContentLoaded', () => {
    const header = document.createElement('header');
    header.innerHTML = `<a href="/" class="brand">Demo shop</a> <nav><a href="/cart" id="cart-link">Cart</a>
      <select id="currency" aria-label="currency"><option>EUR</option><option>USD</option></select></nav>`;
    document.body.prepend(header);
    const select = $('currency');
    select.value = currency();
    select.onchange = () => sessionStorage.setItem('currency', select.value);
    $('cart-link').textContent = `Cart (${cart().length})`;
  });
  return {
    /** The list: category tabs are single-page-app navigations (History API). */
    list() {
      const show = () => {
        const category = location.pathname.startsWith('/category/') ? location.pathname.slice(10) : '';
        $('products').replaceChildren(...PRODUCTS.filter((p) => !category || p.category == category).map(item));
        for (const b of document.querySelectorAll('.tabs button')) b.setAttribute('aria-pressed', String(b.dataset.category == category));
      };
      for (const b of document.querySelectorAll('.tabs button')) {
        b.onclick = () => {
          history.pushState(null, '', b.dataset.category ? '/category/' + b.dataset.category : '/');
          show();
        };
      }
      addEventListener('popstate', show);
      show();
    },
    product() {
      const p = PRODUCTS.find((p) => '/product/' + p.id == location.pathname) || PRODUCTS[0];
      $('product').append(Object.assign(document.createElement('h1'), { textContent: p.name }), money(p.price[currency()]));
      metrics()?.viewItem({ tags: { category: p.category } });
      $('add').onclick = () => {
        metrics()?.addToCart({ tags: { category: p.category } });
        sessionStorage.setItem('cart', JSON.stringify([...cart(), p.id]));
        location.href = '/cart';
      };
    },
    cart() {
      $('lines').replaceChildren(...cart().map((id) => item(PRODUCTS.find((p) => p.id == id))));
      $('total').textContent = money(total());
    },
    checkout() {
      $('total').textContent = money(total());
      metrics()?.beginCheckout();
    },
    thanks() {
      // once per order: a reload of this page finds the cart empty
      if (!cart().length) return;
      const value = total();
      $('paid').textContent = 'Paid ' + money(value);
      metrics()?.purchase({ value, currency: currency() });
      sessionStorage.removeItem('cart');
    },
  };
})();
