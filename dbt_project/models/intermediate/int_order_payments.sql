-- One row per order that has a payment (the shop takes at most one per order; cancelled orders have none).
-- `min(payment_method)`: the method of the order's payment (any_value does not exist on Postgres < 16).
select
    order_id,
    count(*) as payments,
    min(payment_method) as payment_method,
    case
        when {{ dbt.bool_or("payment_status = 'refunded'") }} then 'refunded'
        else 'succeeded'
    end as payment_status,
    {{ round_float('sum(amount)', 2) }} as paid_amount,
    {{ round_float("coalesce(sum(case when payment_status = 'refunded' then amount end), 0)", 2) }} as refunded_amount,
    min(paid_at) as paid_at,
    max(updated_at) as payment_updated_at
from {{ ref('stg_shop_db__payments') }}
group by order_id
