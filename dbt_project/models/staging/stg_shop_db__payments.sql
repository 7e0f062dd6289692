select
    payment_id,
    order_id,
    method as payment_method,
    amount,
    status as payment_status,
    paid_at,
    updated_at
from {{ source('shop_db', 'payments') }}
