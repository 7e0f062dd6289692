-- One row per order that has a payment (the shop takes at most one per order; cancelled orders have none).
select
    order_id,
    count(*) as payments,
    any_value(payment_method) as payment_method,
    case
        when bool_or(payment_status = 'refunded') then 'refunded'
        else 'succeeded'
    end as payment_status,
    round(sum(amount), 2) as paid_amount,
    round(coalesce(sum(amount) filter (where payment_status = 'refunded'), 0), 2) as refunded_amount,
    min(paid_at) as paid_at,
    max(updated_at) as payment_updated_at
from {{ ref('stg_shop_db__payments') }}
group by order_id
